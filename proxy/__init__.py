"""The aiohttp app and its composition root: settings, middleware, forwarding, porter's pages."""
