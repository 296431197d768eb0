/* cli/cmd_plugins.c — being written. */
