/* tensorplug/metrics.h — binary classification metrics. */
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_confusion {
  int64_t tn, fp, fn, tp; /* rows: true 0, 1; columns: predicted 0, 1 */
} tp_confusion;

void tp_confusion_add(tp_confusion *c, int truth, int pred);
double tp_confusion_accuracy(const tp_confusion *c);
/* F1 of the positive class 1 (0 when there is no positive prediction or label). */
double tp_confusion_f1(const tp_confusion *c);

#ifdef __cplusplus
}
#endif
