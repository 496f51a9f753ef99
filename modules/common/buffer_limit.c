/* The content-inspection modules' obsolete *_buffer_limit (buffer_limit.h). */
#include "buffer_limit.h"

void buffer_limit_warn_unused(petrel_module *m, const char *param)
{
    long long v = petrel_param_int(m, param);
    if (v != 1048576)
        petrel_module_log(m, PETREL_LOG_WARNING,
                          "%s = %lld has no effect: the message is read from the queue file and no copy is kept "
                          "in memory (remove it from main.cf)", param, v);
}
