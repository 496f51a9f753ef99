/*
 * The public plugin API: the one header a Petrel module or third-party plugin
 * includes. Everything a plugin may rely on is reachable from here; nothing
 * else from the core is installed.
 *
 * NOT YET COMPLETE: this release installs the memory pool API and the ABI
 * version only. The module descriptor, hooks, verdicts and services arrive
 * with the module system (see doc/plugin-guide.md once it exists); until then
 * no module can be loaded.
 */
#ifndef PETREL_PLUGIN_H
#define PETREL_PLUGIN_H

#include <petrel/version.h>
#include <petrel/pool.h>

#endif
