// A program linked against a library whose file name and SONAME differ, as packaged
// libraries are (file libnamed.so.1.2.3, SONAME and DT_NEEDED libnamed.so.1, found as
// the symlink libnamed.so.1 through RUNPATH $ORIGIN). argv[2], when given, is a path
// dlopened at start: a copy of the library makes two objects of one SONAME. Prints every
// interval (ms, argv[1], default 200):
//   tick=N named=V
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int named_value(int x);

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 2 && !dlopen(argv[2], RTLD_NOW)) printf("dlopen: %s\n", dlerror());
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld named=%d\n", tick, named_value(1));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
