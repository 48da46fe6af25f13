// A replacement for Debian nginx's ngx_http_send_response (exported: nginx is linked
// with -E for dynamic modules), which serves `return 200 "text"`. It calls the original
// through prev with a complex value of its own. The layout of the leading fields is
// nginx's ngx_http_complex_value_t (src/http/ngx_http_script.h, 1.22): with lengths NULL,
// ngx_http_complex_value hands `value` back as it is, so no script runs. Built without
// nginx's headers: the request and the other arguments are only passed through.
#include <stddef.h>
#include <stdint.h>
#include <swpatch.h>

typedef struct {
  size_t len;
  unsigned char *data;
} ngx_str_t;

typedef struct {
  ngx_str_t value;
  uintptr_t *flushes;
  void *lengths;
  void *values;
  union {
    size_t size;
  } u;
} ngx_http_complex_value_t;

static ngx_http_complex_value_t patched = {
  {sizeof("patched\n") - 1, (unsigned char *)"patched\n"}, NULL, NULL, NULL, {0}};

SWPATCH_REPLACE(intptr_t, ngx_http_send_response, void *r, uintptr_t status, ngx_str_t *ct,
                ngx_http_complex_value_t *cv) {
  if (status == 200 && cv != NULL) cv = &patched;
  return ngx_http_send_response_prev(r, status, ct, cv);
}
