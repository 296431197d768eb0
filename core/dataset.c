/* core/dataset.c — being written. */
