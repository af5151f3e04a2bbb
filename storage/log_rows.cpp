// The SQL both engines of storage/log_rows.hpp run, written once.

#include "storage/log_rows.hpp"

namespace iop::storage {

const std::string_view log_columns =
    "id, started_at_ms, ended_at_ms, client_address, client_port, listener, username, account, "
    "outcome, token_source, bytes_client_to_upstream, bytes_upstream_to_client, close_reason, "
    "prev_hash, hash, messages, event";

std::string log_insert_sql(char placeholder) {
  std::string sql = "INSERT INTO connection_log (" + std::string(log_columns) + ") VALUES (";
  for (int i = 1; i <= 17; ++i) {
    sql += (i == 1 ? "" : ", ") + std::string(1, placeholder) + std::to_string(i);
  }
  return sql + ")";
}

LogQuery log_select_sql(const AuditQuery& filter, char placeholder) {
  // Only fixed fragments are joined; every value is a parameter. Leaving out the unused
  // conditions (rather than `?1 IS NULL OR ...`) lets both engines use the indexes.
  LogQuery q;
  q.sql = "SELECT " + std::string(log_columns) + " FROM connection_log";
  const auto add = [&](std::string_view condition, LogQuery::Value value) {
    q.params.push_back(std::move(value));
    q.sql += q.params.size() == 1 ? " WHERE " : " AND ";
    q.sql += condition;
    q.sql += placeholder + std::to_string(q.params.size());
  };
  const auto integer = [](std::int64_t v) { return LogQuery::Value{v, {}}; };
  const auto text = [](std::string_view v) {
    return LogQuery::Value{std::nullopt, std::string(v)};
  };
  if (filter.since_ms) {
    add("ended_at_ms >= ", integer(*filter.since_ms));
  }
  if (filter.until_ms) {
    add("started_at_ms < ", integer(*filter.until_ms));
  }
  if (filter.account) {
    add("account = ", text(*filter.account));
  }
  if (filter.outcome) {
    add("outcome = ", text(to_string(*filter.outcome)));
  }
  if (filter.client_address) {
    add("client_address = ", text(*filter.client_address));
  }
  if (filter.event) {
    add("event = ", text(*filter.event == "connection" ? std::string_view() : *filter.event));
  }
  if (filter.after_id > 0) {
    add("id > ", integer(filter.after_id));
  }
  if (filter.client_port) {
    add("client_port = ", integer(*filter.client_port));
  }
  // Newest first so LIMIT keeps the newest rows.
  q.sql += " ORDER BY id DESC";
  if (filter.limit > 0) {
    q.params.push_back(integer(filter.limit));
    q.sql += " LIMIT " + std::string(1, placeholder) + std::to_string(q.params.size());
  }
  return q;
}

std::string log_summary_sql(char placeholder) {
  const std::string since = std::string(1, placeholder) + "1";
  // Connection rows only (event = ''); the last refresh comes from the refresh_ok events of the
  // whole log, the status from the account's row (none left: removed). Every account with a row
  // in the period (connections or events) and every account in the credentials table: one that
  // needs re-authorization and has no traffic is what an operator most needs to see. The byte
  // sums are cast to BIGINT (PostgreSQL's sum of a bigint is a numeric).
  const std::string in_period =
      "FROM connection_log c WHERE c.account = n.account AND c.event = '' AND c.ended_at_ms >= " +
      since;
  return "WITH names AS (SELECT account FROM connection_log WHERE ended_at_ms >= " + since +
         " AND (account <> '' OR event = '') UNION SELECT email FROM mail_credentials) "
         "SELECT n.account, "
         "(SELECT count(*) " +
         in_period +
         "), "
         "(SELECT count(*) " +
         in_period +
         " AND c.outcome <> 'ok'), "
         "(SELECT CAST(coalesce(sum(c.bytes_client_to_upstream), 0) AS BIGINT) " +
         in_period +
         "), "
         "(SELECT CAST(coalesce(sum(c.bytes_upstream_to_client), 0) AS BIGINT) " +
         in_period +
         "), "
         "(SELECT count(DISTINCT c.client_address) " +
         in_period +
         "), "
         "(SELECT max(c.ended_at_ms) " +
         in_period +
         "), "
         "(SELECT max(r.ended_at_ms) FROM connection_log r WHERE r.event = 'refresh_ok' AND "
         "r.account = n.account), "
         "(SELECT m.status FROM mail_credentials m WHERE m.email = n.account) "
         // Byte order on both engines (PostgreSQL would otherwise follow the database's locale).
         "FROM names n ORDER BY n.account = '', n.account" +
         (placeholder == '$' ? " COLLATE \"C\"" : "");
}

}  // namespace iop::storage
