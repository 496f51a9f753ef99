# The build rules of a Petrel plugin: one C file, MODULE.c, built into
# MODULE.so against the installed Petrel SDK, out of the Petrel tree. The
# example plugins' Makefiles set MODULE and include this file; a plugin of
# your own copies it beside its Makefile:
#
#   MODULE = my_plugin
#   include sdk.mk
#
#   make                      build (pkg-config petrel-plugin gives -I, -shared -fPIC)
#   make install              copy it into the SDK's module directory, mode 0644
#   make install MODULEDIR=/some/dir
#   make clean
#
# PKG_CONFIG_PATH / PKG_CONFIG_SYSROOT_DIR select a staged SDK (DESTDIR install).
ifndef MODULE
$(error set MODULE (the plugin's name: MODULE.c builds MODULE.so) before including sdk.mk)
endif

PKG_CONFIG ?= pkg-config
CC ?= cc
CFLAGS ?= -O2 -g
WARNFLAGS = -std=c11 -Wall -Wextra
PETREL_CFLAGS = $(shell $(PKG_CONFIG) --cflags petrel-plugin)
PETREL_LIBS = $(shell $(PKG_CONFIG) --libs petrel-plugin)
MODULEDIR = $(shell $(PKG_CONFIG) --variable=moduledir petrel-plugin)
INSTALL ?= install

all: $(MODULE).so

# -fPIC is repeated here so that the rule also works with a separate
# compile step; the SDK's --libs carries -shared -fPIC.
$(MODULE).so: $(MODULE).c
	@$(PKG_CONFIG) --exists petrel-plugin || { echo "petrel-plugin.pc not found: install Petrel or set PKG_CONFIG_PATH" >&2; exit 1; }
	$(CC) $(WARNFLAGS) $(CFLAGS) -fPIC $(PETREL_CFLAGS) -o $@ $< $(LDFLAGS) $(PETREL_LIBS)

install: $(MODULE).so
	$(INSTALL) -d -m 0755 $(DESTDIR)$(MODULEDIR)
	$(INSTALL) -m 0644 $(MODULE).so $(DESTDIR)$(MODULEDIR)/$(MODULE).so

clean:
	rm -f $(MODULE).so

.PHONY: all install clean
