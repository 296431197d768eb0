/* models/distilbert.c — being written. */
