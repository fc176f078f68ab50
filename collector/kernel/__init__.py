"""Kernel plumbing shared by every BPF sensor (no sensor logic here).

- `build`: the checks before loading (root, BTF, bcc, tracefs) and the compile flags: kernel struct
  field offsets read from BTF as -DOFF_* defines, plus a sensor's own -D settings; then it asks the
  loader child to compile and attach.
- `loader_child`: the short-lived child process that runs bcc (compile + attach) and hands back only
  file descriptors; `LOADER_MODULE` is its identity on a command line.
- `maps`: the bpf(2) map commands the agent needs once its programs are loaded, without bcc.
- `btf`: a minimal reader of the kernel's raw BTF (struct field offsets).
- `ringbuf`: the mmap'd BPF ring buffer reader.
"""
