/* plugins/cpu/cpu_backend.c — being written. */
