/* A fixture for t/source/check_module_includes.py: every include here but the
 * first three breaks the rule. */
#include <stdlib.h>
#include <petrel/plugin.h>
#include "sneaky.h"
#include "config.h"
#include "lib/log.h"
#include <smtpd/smtpd_int.h>
#include "../../../../../core/lib/xalloc.h"
#include <petrel/internal.h>
#include "missing.h"
