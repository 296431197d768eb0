/* cli/cli_common.c — being written. */
