/* The fixture module's own header. */
#include <petrel/plugin.h>
