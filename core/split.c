/* core/split.c — being written. */
