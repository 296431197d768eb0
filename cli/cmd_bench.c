/* cli/cmd_bench.c — being written. */
