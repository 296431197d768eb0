/* core/tokenizer.c — being written. */
