"""``kibitz hub``: a LAN hub that replaces the internet for rooms on one network (docs/offline.md)."""
