/* core/registry.c — being written. */
