/*
 * gnuplot runs as a child process on a script and two data files in a private temporary
 * directory (mkdtemp), which is removed afterwards.
 */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define POINTS 400

/* What `command -v gnuplot` answers, without a shell. */
static bool gnuplot_installed(void)
{
    const char *path = getenv("PATH");
    char dir[4096], file[4200];
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
        snprintf(file, sizeof(file), "%s/gnuplot", n ? dir : ".");
        if (access(file, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* x = 1/(1-q) from 1 to the sample count (the last percentile the data can tell apart). */
static int write_curve(const char *file, const arpc_hist *h)
{
    FILE *f = fopen(file, "w");
    if (f == NULL)
        return -1;
    double xmax = arpc_hist_count(h) > 1 ? (double)arpc_hist_count(h) : 2.0;
    for (int i = 0; i < POINTS; i++) {
        double x = pow(xmax, (double)i / (POINTS - 1));
        double pct = 100.0 * (1.0 - 1.0 / x);
        fprintf(f, "%.6g %.6g\n", x, (double)arpc_hist_percentile(h, pct) / 1e3);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* A gnuplot single-quoted string: a quote is written twice. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s != '\0'; s++)
        fputs(*s == '\'' ? "''" : (char[]){*s, '\0'}, f);
    fputc('\'', f);
}

static int write_script(const char *file, const char *dir, const char *png, const char *title,
                        const char *base_label)
{
    FILE *f = fopen(file, "w");
    if (f == NULL)
        return -1;
    fputs("set terminal pngcairo size 1100,650 enhanced font 'sans,11'\nset output ", f);
    put_quoted(f, png);
    fputs("\nset title ", f);
    put_quoted(f, title);
    fputs("\nset logscale xy\nset autoscale xfix\nset grid xtics ytics mytics\nset key top left box opaque\n"
          "set xlabel 'percentile'\nset ylabel 'latency (microseconds)'\n"
          "set xtics ('0%%' 1, '50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, "
          "'99.999%%' 100000, '99.9999%%' 1000000)\n"
          "set format y '%g'\n", f);
    fprintf(f, "plot '%s/arpc.dat' using 1:2 with lines lw 2 lc rgb '#c0392b' title 'arpc', \\\n"
               "     '%s/base.dat' using 1:2 with lines lw 2 lc rgb '#2471a3' title ", dir, dir);
    put_quoted(f, base_label);
    fputc('\n', f);
    return fclose(f) == 0 ? 0 : -1;
}

static int run_gnuplot(const char *script)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int write_sweep(const char *dat, const char *gp, const char *png, const char *title,
                       const struct bench_plot_point *pts, size_t n)
{
    FILE *f = fopen(dat, "w");
    if (f == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%.6g %.6g %.6g %.6g\n", pts[i].calls_per_s, pts[i].p50_us, pts[i].p99_us, pts[i].p999_us);
    if (fclose(f) != 0 || (f = fopen(gp, "w")) == NULL)
        return -1;
    fputs("set terminal pngcairo size 1100,650 enhanced font 'sans,11'\nset output ", f);
    put_quoted(f, png);
    fputs("\nset title ", f);
    put_quoted(f, title);
    fputs("\nset logscale y\nset grid xtics ytics mytics\nset key top left box opaque\n"
          "set xlabel 'achieved calls/s'\nset ylabel 'latency from intended send (microseconds)'\n"
          "set format y '%g'\n", f);
    fprintf(f, "plot '%s' using 1:2 with linespoints lw 2 title 'p50', '' using 1:3 with linespoints lw 2 "
               "title 'p99', '' using 1:4 with linespoints lw 2 title 'p99.9'\n", dat);
    return fclose(f) == 0 ? 0 : -1;
}

int bench_plot_sweep(const char *png, const char *title, const struct bench_plot_point *pts, size_t n)
{
    if (!gnuplot_installed()) {
        fprintf(stderr, "arpc-bench: --plot: gnuplot is not installed (apt-get install gnuplot); "
                        "no plot written\n");
        return 0;
    }
    char dir[] = "/tmp/arpc-bench-plot-XXXXXX", dat[64], gp[64];
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "arpc-bench: --plot: %s\n", strerror(errno));
        return -1;
    }
    snprintf(dat, sizeof(dat), "%s/sweep.dat", dir);
    snprintf(gp, sizeof(gp), "%s/plot.gp", dir);
    int rv = write_sweep(dat, gp, png, title, pts, n) == 0 ? run_gnuplot(gp) : -1;
    unlink(dat);
    unlink(gp);
    rmdir(dir);
    fprintf(stderr, rv != 0 ? "arpc-bench: --plot: gnuplot failed; no plot written to %s\n"
                            : "arpc-bench: latency-vs-throughput plot written to %s\n", png);
    return rv;
}

int bench_plot(const char *png, const char *title, const arpc_hist *arpc, const arpc_hist *base,
               const char *base_label)
{
    if (!gnuplot_installed()) {
        fprintf(stderr, "arpc-bench: --plot: gnuplot is not installed (apt-get install gnuplot); "
                        "no plot written\n");
        return 0;
    }
    char dir[] = "/tmp/arpc-bench-plot-XXXXXX", a[64], b[64], gp[64];
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "arpc-bench: --plot: %s\n", strerror(errno));
        return -1;
    }
    snprintf(a, sizeof(a), "%s/arpc.dat", dir);
    snprintf(b, sizeof(b), "%s/base.dat", dir);
    snprintf(gp, sizeof(gp), "%s/plot.gp", dir);
    int rv = write_curve(a, arpc) == 0 && write_curve(b, base) == 0 &&
                     write_script(gp, dir, png, title, base_label) == 0
                 ? run_gnuplot(gp)
                 : -1;
    unlink(a);
    unlink(b);
    unlink(gp);
    rmdir(dir);
    if (rv != 0)
        fprintf(stderr, "arpc-bench: --plot: gnuplot failed; no plot written to %s\n", png);
    else
        fprintf(stderr, "arpc-bench: latency plot written to %s\n", png);
    return rv;
}
