/* cli/cmd_tokenize.c — being written. */
