// A trace target with functions of known arguments, built by the tests. noipa keeps every
// call a real call, as a uprobe needs.
//   uprobe_target calls N   : tk_add/tk_greet/tk_slow from two threads, N rounds each
//   uprobe_target malloc    : allocations of known sizes, then exit
//   uprobe_target spin S    : burn the CPU in tk_spin for S seconds (for the profiler)
//   uprobe_target sleeps N  : tk_sleep_ms(1), (10), (50) N times each, tk_recurse(3, 20) N times
//   uprobe_target read N    : as thread "tk-reader", read() 100, 1000, 5000 bytes N times each
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile long sink; /* results are used, so no call is dropped */

__attribute__((noipa)) int tk_add(int a, int b)
{
	return a + b;
}

__attribute__((noipa)) long tk_greet(const char *name, int times)
{
	return (long)strlen(name) * times;
}

/* Sleeps `ms` milliseconds; returns thread * 1000 + round, so pairs can be checked. */
__attribute__((noipa)) int tk_slow(int thread, int round, int ms)
{
	usleep(ms * 1000);
	return thread * 1000 + round;
}

/* Spins until `seconds` have passed; all the time is spent here, not in a callee. */
__attribute__((noipa)) long tk_spin(int seconds)
{
	struct timespec start, now;
	long n = 0;

	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 1000000; i++)
			sink += i;
		n++;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) <
		 seconds * 1000000000L);
	return n;
}

/* Sleeps `ms` milliseconds (funclatency's known latencies). */
__attribute__((noipa)) int tk_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
	return ms;
}

/* Recurses `depth` levels, the innermost sleeping `ms`: every level takes about `ms`. */
__attribute__((noipa)) int tk_recurse(int depth, int ms)
{
	if (depth <= 1)
		return tk_sleep_ms(ms);
	return tk_recurse(depth - 1, ms) + 1;
}

/* read() of exactly 100, 1000 and 5000 bytes, n times each, from the start of our own
 * executable (longer than 5000 bytes), under a thread name of our own: the dynamic loader's
 * reads (an 832-byte ELF header per library) come before it and under the program's name. */
static int reads(int n)
{
	static char buf[5000];
	static const int sizes[] = { 100, 1000, 5000 };
	int fd = open("/proc/self/exe", O_RDONLY);

	if (fd < 0)
		return 1;
	prctl(PR_SET_NAME, "tk-reader");
	for (int s = 0; s < 3; s++)
		for (int i = 0; i < n; i++)
			if (lseek(fd, 0, SEEK_SET) != 0 || read(fd, buf, sizes[s]) != sizes[s])
				return 1;
	close(fd);
	return 0;
}

static int rounds;

static void *worker(void *arg)
{
	int t = (int)(long)arg;

	for (int i = 0; i < rounds; i++) {
		sink += tk_add(t, -i - 7);
		sink += tk_greet(t ? "threadone" : "zero", i + 1);
		sink += tk_slow(t, i, t + 1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "malloc")) {
		/* Sizes chosen to stand out from the loader's own allocations; volatile so the
		 * compiler cannot drop the unused pair. */
		char *volatile a = malloc(12345), *volatile b = malloc(54321);
		a[0] = b[0] = 1;
		free(a);
		free(b);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "sleeps")) {
		static const int ms[] = { 1, 10, 50 };
		int n = atoi(argv[2]);

		for (int s = 0; s < 3; s++)
			for (int i = 0; i < n; i++)
				sink += tk_sleep_ms(ms[s]);
		for (int i = 0; i < n; i++)
			sink += tk_recurse(3, 20);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "read"))
		return reads(atoi(argv[2]));
	if (argc > 2 && !strcmp(argv[1], "spin"))
		return tk_spin(atoi(argv[2])) > 0 ? 0 : 1;
	/* Give the tracer a moment: the test starts it before us, but be safe. */
	rounds = argc > 2 ? atoi(argv[2]) : 5;
	pthread_t th[2];
	for (long t = 0; t < 2; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	return 0;
}
