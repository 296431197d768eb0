/* core/metrics.c — binary classification metrics from a confusion matrix. */
#include "tensorplug/metrics.h"

/* Any non-zero label counts as the positive class 1. */
void tp_confusion_add(tp_confusion *c, int truth, int pred) {
  if (truth) {
    if (pred) c->tp++;
    else c->fn++;
  } else {
    if (pred) c->fp++;
    else c->tn++;
  }
}

double tp_confusion_accuracy(const tp_confusion *c) {
  int64_t total = c->tn + c->fp + c->fn + c->tp;
  return total > 0 ? (double)(c->tn + c->tp) / (double)total : 0.0;
}

/* F1 = 2 tp / (2 tp + fp + fn): the harmonic mean of precision and recall
 * without dividing by a zero precision or recall first. */
double tp_confusion_f1(const tp_confusion *c) {
  int64_t den = 2 * c->tp + c->fp + c->fn;
  return c->tp > 0 && den > 0 ? (double)(2 * c->tp) / (double)den : 0.0;
}
