/* core/backend.c — being written. */
