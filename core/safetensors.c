/* core/safetensors.c — being written. */
