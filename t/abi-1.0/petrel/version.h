/*
 * Petrel plugin ABI version.
 *
 * Rules (semantic, like libtool's current:revision:age but in two numbers):
 *  - MINOR grows when the API grows compatibly: a new function, a new hook
 *    slot taken from the spare room, a new enum value that old plugins never
 *    see. A plugin built against minor N loads into a core whose minor >= N.
 *  - MAJOR grows when anything a built plugin relies on changes: a struct
 *    layout, a function signature, a removed symbol. MINOR then resets to 0,
 *    and the core refuses plugins of another major.
 * The release version (PETREL_VERSION) moves independently.
 */
#ifndef PETREL_VERSION_H
#define PETREL_VERSION_H

#define PETREL_VERSION "0.1.0"
#define PETREL_ABI_MAJOR 1
#define PETREL_ABI_MINOR 0

#endif
