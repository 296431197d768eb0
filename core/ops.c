/* core/ops.c — being written. */
