// Allocator settings for training processes.
#pragma once

namespace sy::train {

// Keeps freed memory in the process (glibc: no mmap for big blocks, no trimming). A training
// step allocates and frees the same large buffers every time, and on VMs where a fresh page
// costs ~15 us (machine.md) returning them to the OS would dominate the step.
void keep_freed_memory();

}  // namespace sy::train
