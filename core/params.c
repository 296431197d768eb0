/* core/params.c — being written. */
