/* The fixture tree's modules/common: support code bundled modules share. */
#include <stddef.h>
