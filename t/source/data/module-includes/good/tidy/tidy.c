/* A fixture for t/source/check_module_includes.py: only allowed includes. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <petrel/plugin.h>
#include <petrel/pool.h>
#include <petrel/version.h>
#include "tidy.h"
#include "shared.h"
