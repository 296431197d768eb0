/* core/tensor.c — being written. */
