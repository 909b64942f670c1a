/* sagactl dead-letter commands: list, show, diagnose, discard, replay (rate limited, with canary). */
#ifndef SAGAD_CTL_DLQ_H
#define SAGAD_CTL_DLQ_H

#include "config.h"

/* `sagactl dlq SUBCOMMAND ...`: argv holds the words after "dlq"; returns an exit code. */
int ctl_dlq(const struct config *cfg, int argc, char **argv);

#endif /* SAGAD_CTL_DLQ_H */
