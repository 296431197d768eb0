/* The kernels of cuda_kernels.cu built by the host compiler for the
 * emulator (sim/tpsim.h): the tests' "cudasim" plugin. */
#include "../cuda_kernels.cu"
