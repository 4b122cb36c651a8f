#pragma once
// Keeps fork() from cutting a thread short inside the library's GEMM.
//
// oneDNN's dnnl_sgemm locks a mutex of its own inside the call. A process
// that forked while another of its threads held it gave the child a mutex
// that nobody would ever unlock, and the child's first GEMM waited forever
// (seen: a Python child forked while eight threads ran forward at batch 32;
// gdb showed it in pthread_mutex_lock under dnnl_sgemm). So a fork waits
// until no thread is inside the library's GEMM, and a GEMM that would start
// meanwhile waits until the fork has returned (a pthread_atfork handler,
// registered when the library loads).
//
// Entering costs one uncontended atomic add: each thread counts itself in a
// cache line of its own (parallel/sharded_count.hpp).
#include <cstddef>

namespace kortexdl::backend {

class LibraryCall {
 public:
  LibraryCall();
  ~LibraryCall();
  LibraryCall(const LibraryCall&) = delete;
  LibraryCall& operator=(const LibraryCall&) = delete;
};

// Whether the fork handler is installed (tests).
bool library_fork_gate_installed();
// Calls inside the library's GEMM right now, all threads (tests).
std::size_t library_calls_inside();

}  // namespace kortexdl::backend
