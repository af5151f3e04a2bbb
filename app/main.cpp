#include "app/cli.hpp"

int main(int argc, char** argv) { return iop::app::run_cli(argc, argv); }
