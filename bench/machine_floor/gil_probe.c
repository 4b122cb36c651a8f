// The smallest extension that releases the GIL: what any library's calls
// can get from several Python threads. region(ns) spins for ns nanoseconds
// with the GIL released (CPython's own Py_BEGIN/END_ALLOW_THREADS, nothing
// else); work(iterations) does fixed compute instead. Both return a new
// small object, as a call returning a result would.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#include "fma_work.h"

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static volatile float sink;

static PyObject* region(PyObject* self, PyObject* arg) {
  (void)self;
  const long long ns = PyLong_AsLongLong(arg);
  if (ns < 0 && PyErr_Occurred()) return NULL;
  Py_BEGIN_ALLOW_THREADS
  const long long end = now_ns() + ns;
  while (now_ns() < end) {
  }
  Py_END_ALLOW_THREADS
  return PyBytes_FromStringAndSize(NULL, 40);
}

static PyObject* work(PyObject* self, PyObject* arg) {
  (void)self;
  const long long iterations = PyLong_AsLongLong(arg);
  if (iterations < 0 && PyErr_Occurred()) return NULL;
  Py_BEGIN_ALLOW_THREADS
  sink = floor_fma_work(iterations);
  Py_END_ALLOW_THREADS
  return PyBytes_FromStringAndSize(NULL, 40);
}

static PyMethodDef methods[] = {
    {"region", region, METH_O, "Spins for the given nanoseconds with the GIL released."},
    {"work", work, METH_O, "Does the given iterations of vector multiply-adds with the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gil_probe", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_gil_probe(void) { return PyModule_Create(&module); }
