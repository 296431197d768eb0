/* models/bert.c — being written. */
