/* eval.h - engine-internal piece of eval.c (the model description, machine
 * limits and evaluation arithmetic of kiln.h): the accessor it uses to reach
 * a model's GGUF file inside a kiln_model, whose struct is private to
 * generate.c. */
#ifndef KILN_ENGINE_EVAL_H
#define KILN_ENGINE_EVAL_H

#include "kiln.h"
#include "model/gguf.h"

/* Defined in generate.c: the GGUF file m's weights are mapped from. */
const gguf_file *engine_model_gguf(const kiln_model *m);

#endif
