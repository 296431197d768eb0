/* plugins/cpu/cpu_kernels.c — being written. */
