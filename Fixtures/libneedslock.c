// A library whose constructor takes the target's holder_mutex (holder.c), as a real
// library's constructor may need a lock another thread of the target holds.
// compute_locked returns x*5 (105 for 21).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
__attribute__((constructor)) static void take_the_lock(void) {
  pthread_mutex_t *m = dlsym(RTLD_DEFAULT, "holder_mutex");
  if (m) {
    pthread_mutex_lock(m);
    pthread_mutex_unlock(m);
  }
}
__attribute__((noipa)) int compute_locked(int x) { return x * 5; }
