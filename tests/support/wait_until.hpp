#pragma once
// The one way tests wait for something another process or thread does (a file to appear, a
// port to listen, a log line, a row in a database, a process to exit): poll a predicate with
// a short, growing interval until it holds or a bound passes. The bound only stops a hang; it
// is never the synchronisation itself, so no test sleeps a fixed time and hopes.

#include <chrono>
#include <functional>
#include <string_view>

namespace iop::test {

// Polls `pred` until it returns true or `limit` passes; returns whether it held. The first
// check is immediate, the interval then grows from 1 ms to 20 ms, and `pred` is checked once
// more when the bound is reached. Reports nothing: for support code that throws its own
// error, and for loops whose timeout the caller reports with more context.
bool poll_until(const std::function<bool()>& pred, std::chrono::milliseconds limit);

// The same; on timeout also records a (non-fatal) test failure naming `what` and the limit.
// Wrap it in ASSERT_TRUE to stop the test there.
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::string_view what = "");

}  // namespace iop::test
