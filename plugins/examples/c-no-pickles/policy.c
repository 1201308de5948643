/*
 * Example policy in C: no pickles. Downloads (and ciphertext reads, which
 * are key releases of one file) of files whose name ends in a blocked
 * suffix are denied: unpickling runs code, so a pickled model is code from
 * whoever wrote it. Everything else is left to the other policies.
 *
 * Config: `blocked` = comma-separated suffixes, compared without regard to
 *         ASCII case (default ".pkl,.pickle,.joblib"; empty blocks nothing),
 *         `exempt`  = comma-separated environments where they are allowed
 *         (default none).
 * Build:  ./build.sh policy.wasm   (wit-bindgen c, clang, wasi-libc)
 * Test:   modelvault policy test policy.wasm cases.json
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "policy.h" /* generated: wit-bindgen c ... --out-dir gen */

typedef exports_modelvault_policy_evaluator_request_t request_t;
typedef exports_modelvault_policy_evaluator_decision_t decision_t;
typedef policy_list_tuple2_string_string_t config_t;

/* WIT strings are UTF-8 bytes with a length, not NUL-terminated. */
static bool str_eq(const policy_string_t *s, const char *c) {
  size_t n = strlen(c);
  return s->len == n && memcmp(s->ptr, c, n) == 0;
}

static char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Whether `s` ends with the `n` bytes at `suffix`, ignoring ASCII case. */
static bool ends_with(const policy_string_t *s, const char *suffix, size_t n) {
  if (n == 0 || n > s->len) return false;
  const char *tail = (const char *)s->ptr + (s->len - n);
  for (size_t i = 0; i < n; i++) {
    if (ascii_lower(tail[i]) != ascii_lower(suffix[i])) return false;
  }
  return true;
}

/* The first value of `key`, or NULL. */
static const policy_string_t *config_value(const config_t *config, const char *key) {
  for (size_t i = 0; i < config->len; i++) {
    if (str_eq(&config->ptr[i].f0, key)) return &config->ptr[i].f1;
  }
  return NULL;
}

/* Calls `match` on each trimmed, non-empty item of a comma-separated list
 * until it returns true; returns whether one did. */
static bool any_item(const char *list, size_t len,
                     bool (*match)(const char *item, size_t n, const void *arg),
                     const void *arg) {
  size_t start = 0;
  while (start <= len) {
    size_t end = start;
    while (end < len && list[end] != ',') end++;
    size_t a = start, b = end;
    while (a < b && (list[a] == ' ' || list[a] == '\t')) a++;
    while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t')) b--;
    if (b > a && match(list + a, b - a, arg)) return true;
    start = end + 1;
  }
  return false;
}

static bool suffix_matches(const char *item, size_t n, const void *path) {
  return ends_with((const policy_string_t *)path, item, n);
}

static bool same_env(const char *item, size_t n, const void *env) {
  const policy_string_t *e = env;
  return e->len == n && memcmp(e->ptr, item, n) == 0;
}

/* The decision owns its strings: the generated code frees them after the
 * host has read them, so they must come from malloc (policy_string_dup),
 * never point at a literal (policy_string_set). */
static void decide(decision_t *ret, exports_modelvault_policy_evaluator_outcome_t outcome,
                   const char *code, const char *reason) {
  ret->outcome = outcome;
  policy_string_dup(&ret->reason_code, code);
  policy_string_dup(&ret->reason, reason);
}

void exports_modelvault_policy_evaluator_evaluate(request_t *req, config_t *config,
                                                  decision_t *ret) {
  const policy_option_string_t *file = &req->resource.file_path;
  bool gated = req->action == EXPORTS_MODELVAULT_POLICY_EVALUATOR_ACTION_DOWNLOAD ||
               req->action == EXPORTS_MODELVAULT_POLICY_EVALUATOR_ACTION_KEY_RELEASE;
  if (!gated || !file->is_some) {
    decide(ret, EXPORTS_MODELVAULT_POLICY_EVALUATOR_OUTCOME_ABSTAIN, "pickles.not-gated",
           "not a file download");
    goto done;
  }
  const policy_string_t *blocked = config_value(config, "blocked");
  const char *list = blocked ? (const char *)blocked->ptr : ".pkl,.pickle,.joblib";
  size_t list_len = blocked ? blocked->len : strlen(list);
  if (!any_item(list, list_len, suffix_matches, &file->val)) {
    decide(ret, EXPORTS_MODELVAULT_POLICY_EVALUATOR_OUTCOME_ABSTAIN, "pickles.not-pickle",
           "not a blocked file type");
    goto done;
  }
  const policy_string_t *exempt = config_value(config, "exempt");
  const policy_string_t *env = &req->context.environment;
  char reason[512];
  if (exempt && any_item((const char *)exempt->ptr, exempt->len, same_env, env)) {
    snprintf(reason, sizeof reason, "%.*s is exempt from the pickle ban", (int)env->len,
             (const char *)env->ptr);
    decide(ret, EXPORTS_MODELVAULT_POLICY_EVALUATOR_OUTCOME_ABSTAIN, "pickles.exempt", reason);
    goto done;
  }
  /* %.*s takes an int: a longer path is cut, which only shortens the reason. */
  int shown = file->val.len > 256 ? 256 : (int)file->val.len;
  snprintf(reason, sizeof reason, "%.*s: pickled files run code when loaded", shown,
           (const char *)file->val.ptr);
  decide(ret, EXPORTS_MODELVAULT_POLICY_EVALUATOR_OUTCOME_DENY, "pickles.blocked", reason);

done:
  /* The arguments are ours to free (each evaluation runs in a fresh
   * instance, so a leak would not outlive it either). */
  exports_modelvault_policy_evaluator_request_free(req);
  policy_list_tuple2_string_string_free(config);
}
