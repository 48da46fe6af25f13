// Functions that live outside the executable: shared_value in libshared.so (linked at
// start), cbrt in the system's libm (called through a pointer), plugin_value in
// libplugin.so (dlopened at tick 3). Prints every interval (ms, argv[1], default 200).
#include <dlfcn.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int shared_value(int x);

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

double (*volatile cbrt_fn)(double) = cbrt;
double (*volatile floor_fn)(double) = floor;

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  int (*plugin)(int) = NULL;
  for (long tick = 0; !stopping; tick++) {
    if (tick == 3 && !plugin) {
      void *handle = dlopen("libplugin.so", RTLD_NOW); /* found through RUNPATH $ORIGIN */
      if (!handle) printf("dlopen: %s\n", dlerror());
      else plugin = (int (*)(int))dlsym(handle, "plugin_value");
    }
    printf("tick=%ld shared=%d cbrt=%.3f floor=%.1f plugin=%d\n", tick, shared_value(1),
           cbrt_fn(27.0), floor_fn(2.5), plugin ? plugin(1) : 0);
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
