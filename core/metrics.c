/* core/metrics.c — being written. */
