/* cli.h -- subcommands of the `retnet` command-line tool. */
#ifndef RN_CLI_H
#define RN_CLI_H

int cli_usage(const char *msg);
int cli_is_dir(const char *path);
/* "1,2,3" -> new malloc'd array owned by the caller; returns count or -1. */
int cli_parse_ids(const char *s, int **out);

int cli_info(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_tokbench(int argc, char **argv);
int cli_sampbench(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_random(int argc, char **argv);
int cli_cuda_info(int argc, char **argv);
int cli_bench_cuda(int argc, char **argv);

#endif
