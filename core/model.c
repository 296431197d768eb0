/* core/model.c — being written. */
