/*
 * The *_buffer_limit parameters of the content-inspection modules (milter,
 * clamav, spamassassin) sized the copy of the message earlier versions
 * kept; nothing is kept now (the message is read from the queue file).
 * Still accepted so that a main.cf setting one loads, but a value set says
 * what will not happen (rule 2: nothing changes meaning silently).
 */
#ifndef PETREL_MODULES_BUFFER_LIMIT_H
#define PETREL_MODULES_BUFFER_LIMIT_H

#include <petrel/plugin.h>

/* Warns when param (an integer parameter whose default is 1048576) is set
 * to another value. */
void buffer_limit_warn_unused(petrel_module *m, const char *param);

#endif
