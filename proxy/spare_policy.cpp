#include "proxy/spare_policy.hpp"

namespace iop::proxy {

void note_login(SpareState& state, SpareTime now) {
  state.last_login = now;
  state.failed = false;  // worth one more attempt
}

bool should_open_spare(const SparePolicy& policy, const SpareState& state, SpareTime now) {
  if (!policy.enabled || state.parked || state.making || state.failed) {
    return false;
  }
  return state.last_login && now - *state.last_login < policy.window;
}

bool spare_usable(const SparePolicy& policy, SpareTime created, SpareTime now) {
  return now - created < policy.max_idle;
}

}  // namespace iop::proxy
