#include "auth/provider.hpp"

#include <gtest/gtest.h>

namespace iop::auth {
namespace {

const ProviderProfile& builtin(const std::string& name) { return builtin_profiles().at(name); }

ProviderProfile with_client(ProviderProfile p, std::string client_id = "cid") {
  p.client_id = std::move(client_id);
  return p;
}

TEST(Provider, BuiltInProfiles) {
  const auto& ms = builtin("microsoft");
  EXPECT_EQ(ms.flow, Flow::delegated);
  EXPECT_EQ(ms.tenant, "common");
  EXPECT_EQ(ms.scope, "https://outlook.office.com/IMAP.AccessAsUser.All offline_access");
  EXPECT_EQ(ms.upstream_host, "outlook.office365.com");
  EXPECT_EQ(ms.upstream_port, 993);
  EXPECT_EQ(ms.send_scope, "https://outlook.office.com/SMTP.Send");
  EXPECT_EQ(ms.smtp_host, "smtp.office365.com");
  EXPECT_EQ(ms.smtp_port, 587);
  EXPECT_EQ(ms.smtp_tls, "starttls");
  const auto& app = builtin("microsoft-app");
  EXPECT_TRUE(app.send_scope.empty());
  EXPECT_EQ(app.flow, Flow::app);
  EXPECT_EQ(app.scope, "https://outlook.office365.com/.default");
  EXPECT_TRUE(app.authorize_endpoint.empty());
  const auto& google = builtin("google");
  EXPECT_EQ(google.upstream_host, "imap.gmail.com");
  EXPECT_EQ(google.scope, "https://mail.google.com/");
  EXPECT_TRUE(google.device_endpoint.empty());
  EXPECT_TRUE(google.send_scope.empty());
  EXPECT_EQ(google.smtp_host, "smtp.gmail.com");
  EXPECT_EQ(google.smtp_port, 465);
  EXPECT_EQ(google.smtp_tls, "implicit");
}

TEST(Provider, TenantReplacesThePlaceholderInEveryEndpoint) {
  const auto r = resolve_provider(with_client(builtin("microsoft")), "contoso.com", "").value();
  EXPECT_EQ(r.tenant, "contoso.com");
  EXPECT_EQ(r.token_endpoint, "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token");
  EXPECT_EQ(r.authorize_endpoint,
            "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize");
  EXPECT_EQ(r.device_endpoint,
            "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode");
  EXPECT_EQ(r.client_id, "cid");
  EXPECT_EQ(r.scope, "https://outlook.office.com/IMAP.AccessAsUser.All offline_access");
  EXPECT_EQ(r.authorization_scope(),
            "https://outlook.office.com/IMAP.AccessAsUser.All offline_access "
            "https://outlook.office.com/SMTP.Send openid profile email");
}

TEST(Provider, ProfileTenantIsTheDefaultAndClientIdCanBeOverridden) {
  const auto r = resolve_provider(with_client(builtin("microsoft")), "", "own-id").value();
  EXPECT_EQ(r.tenant, "common");
  EXPECT_EQ(r.token_endpoint, "https://login.microsoftonline.com/common/oauth2/v2.0/token");
  EXPECT_EQ(r.client_id, "own-id");
}

TEST(Provider, RefusesWhatCannotWork) {
  // No client id anywhere: the message names the key and the flag.
  auto r = resolve_provider(builtin("microsoft"), "", "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("[providers.microsoft] client_id"), std::string::npos);
  EXPECT_NE(r.error().message.find("--client-id"), std::string::npos);
  // A tenant that would change the URL's path.
  r = resolve_provider(with_client(builtin("microsoft")), "evil.com/x?y", "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("is not a tenant id"), std::string::npos);
  // A tenant for a profile without a placeholder.
  r = resolve_provider(with_client(builtin("google")), "contoso.com", "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no {tenant} placeholder"), std::string::npos);
  // Client credentials need a real tenant.
  r = resolve_provider(with_client(builtin("microsoft-app")), "", "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("--tenant"), std::string::npos);
  r = resolve_provider(with_client(builtin("microsoft-app")), "common", "");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not 'common'"), std::string::npos);
  EXPECT_TRUE(resolve_provider(with_client(builtin("microsoft-app")), "contoso.com", ""));
}

TEST(Provider, ValidTenants) {
  EXPECT_TRUE(valid_tenant("common"));
  EXPECT_TRUE(valid_tenant("9188040d-6c67-4c5b-b112-36a304b66dad"));
  EXPECT_TRUE(valid_tenant("contoso.onmicrosoft.com"));
  EXPECT_FALSE(valid_tenant(""));
  EXPECT_FALSE(valid_tenant("a/b"));
  EXPECT_FALSE(valid_tenant("a b"));
  EXPECT_FALSE(valid_tenant("{tenant}"));
}

TEST(Provider, FlowNames) {
  EXPECT_EQ(parse_flow("delegated"), Flow::delegated);
  EXPECT_EQ(parse_flow("app"), Flow::app);
  EXPECT_FALSE(parse_flow("App"));
  EXPECT_EQ(to_string(Flow::app), "app");
}

}  // namespace
}  // namespace iop::auth
