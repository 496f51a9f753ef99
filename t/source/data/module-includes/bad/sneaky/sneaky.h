/* The fixture module's own header, which itself reaches into the core. */
#include "module/module.h"
