/*
 * @hubops/usage: a hand-written JupyterLab 4 prebuilt ("federated") extension.
 * No bundler: this file is the container ("remote entry") that the loader expects.
 *
 * What the loader does, in jupyterlab 4.6.6 (source files in
 * site-packages/jupyterlab/staging/; the same code is compiled into static/main.*.js):
 *  - jupyterlab_server/config.py get_page_config (L148-169) copies
 *    package.json jupyterlab._build {load, extension, style} into
 *    page config "federated_extensions".
 *  - bootstrap.js L77-84 adds <script src="{fullLabextensionsUrl}/@hubops/usage/{load}">;
 *    loadComponent (L55-65) then awaits __webpack_init_sharing__('default') and
 *    calls window._JUPYTERLAB[name].init(__webpack_share_scopes__.default).
 *  - index.js createModule (L11-21, called from L130-143) does
 *    factory = await window._JUPYTERLAB[name].get(module); mod = factory();
 *    mod.__scope__ = name, once for "extension" and once for "style".
 *  - index.js getPlugins (L150-161): if mod has its own __esModule, the plugins are
 *    mod.default (one plugin or an array); L238-248 registers them.
 * Share scope layout: scope[pkg][version] = {get, from, loaded, ...}, where
 * get() returns a Promise of a factory and factory() returns the module. The app
 * registers its own copies there, so tokens we take from it (IStatusBar) are the
 * app's objects.
 */
(function () {
  'use strict';
  const NAME = '@hubops/usage';
  const POLL_MS = 5000;
  let shareScope = null;

  // Highest shared version of pkg with the given major. That is the copy the app
  // itself uses, since the core packages are shared as singletons.
  async function shared(pkg, major) {
    const versions = (shareScope && shareScope[pkg]) || {};
    const nums = v => v.split(/[.+-]/).slice(0, 3).map(n => parseInt(n, 10) || 0);
    const newer = (a, b) => {
      const x = nums(a), y = nums(b);
      for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
      return false;
    };
    let best = null;
    for (const v of Object.keys(versions)) {
      if (nums(v)[0] === major && (best === null || newer(v, best))) best = v;
    }
    if (best === null) throw new Error(`${NAME}: ${pkg}@${major}.x is not in the share scope`);
    const factory = await versions[best].get();
    return factory();
  }

  const gib = (n, unit) => (n / unit).toFixed(1);

  function gpuText(g) {
    const util = g.utilization_gpu == null ? '?' : Math.round(g.utilization_gpu);
    return `GPU ${g.index}: ${util}% · ` +
      `${gib(g.memory_used_mib, 1024)}/${gib(g.memory_total_mib, 1024)} GiB`;
  }

  function oomMessage(limitBytes) {
    const limit = limitBytes == null ? '' : ` (${gib(limitBytes, 1024 ** 3)} GiB)`;
    // JupyterLab cuts a notification at 140 characters (apputils MAX_MESSAGE_LENGTH)
    return `Your server hit its memory limit${limit}: its largest process, usually a kernel, ` +
      'was stopped. Use less memory, or a larger profile.';
  }

  // bytes as the status bar shows them: GiB with one decimal, MiB below 1 GiB
  const size = n => n >= 1024 ** 3 ? `${gib(n, 1024 ** 3)} GiB` : `${Math.round(n / 1024 ** 2)} MiB`;

  function diskText(d) {
    return d.quota_bytes == null ? `Disk: ${size(d.used_bytes)}` :
      `Disk: ${size(d.used_bytes)} / ${size(d.quota_bytes)}`;
  }

  function overQuotaMessage(d) {
    // at most 140 characters (apputils MAX_MESSAGE_LENGTH)
    return `Your files use ${size(d.used_bytes)}, over your disk quota of ` +
      `${size(d.quota_bytes)}. Delete or move files to get under it.`;
  }

  function createPlugin(IStatusBar, ServerConnection, Notification, Widget) {
    return {
      id: `${NAME}:status`,
      description: 'Shows GPU use and memory-limit (OOM) notices in the status bar.',
      autoStart: true,
      requires: [IStatusBar],
      activate(app, statusBar) {
        const item = new Widget();
        item.addClass('hubops-usage-gpu');
        item.addClass('jp-StatusBar-TextItem');
        item.node.style.display = 'none';
        statusBar.registerStatusItem(`${NAME}:status`, { item, align: 'left', rank: 100 });
        const diskItem = new Widget();
        diskItem.addClass('hubops-usage-disk');
        diskItem.addClass('jp-StatusBar-TextItem');
        diskItem.node.style.display = 'none';
        statusBar.registerStatusItem(`${NAME}:disk`, { item: diskItem, align: 'left', rank: 101 });
        let toldOverQuota = false;

        const settings = app.serviceManager.serverSettings;
        // no_track_activity: jupyter_server does not count this poll as user
        // activity, so the idle culler still sees an idle server.
        const url = settings.baseUrl.replace(/\/?$/, '/') + 'api/hubops/usage?no_track_activity=1';
        let oomKills = null; // value from the first successful response
        let busy = false;
        let first = true;

        function render(data) {
          const gpus = Array.isArray(data.gpus) ? data.gpus : [];
          item.node.textContent = gpus.map(gpuText).join('  ');
          item.node.title = gpus.map(g => `GPU ${g.index}: ${g.name}`).join('\n');
          item.node.style.display = gpus.length ? '' : 'none';
          const disk = data.disk || {};
          if (disk.used_bytes == null) {
            diskItem.node.style.display = 'none';
            return;
          }
          diskItem.node.textContent = diskText(disk);
          diskItem.node.title = 'Your files (home directory)' +
            (disk.quota_bytes == null ? '' : ' against your disk quota');
          diskItem.node.style.display = '';
          if (disk.over_quota) {
            diskItem.addClass('hubops-usage-over');
            if (!toldOverQuota) {
              toldOverQuota = true;
              Notification.warning(overQuotaMessage(disk), { autoClose: false });
            }
          } else {
            diskItem.removeClass('hubops-usage-over');
          }
        }

        function checkOom(data) {
          const kills = Number(data.oom_kills) || 0;
          if (oomKills !== null && kills > oomKills) {
            item.addClass('hubops-usage-oom');
            Notification.error(oomMessage(data.memory_limit_bytes), { autoClose: false });
          }
          oomKills = oomKills === null ? kills : Math.max(oomKills, kills);
        }

        async function tick() {
          if (busy || document.hidden) return;
          busy = true;
          try {
            // the first poll of a JupyterLab that opens asks for fresh disk figures
            const ask = first ? url + '&fresh=1' : url;
            first = false;
            const resp = await ServerConnection.makeRequest(ask, { method: 'GET' }, settings);
            if (!resp.ok) return; // keep the last text; try again next tick
            const data = await resp.json();
            render(data);
            checkOom(data);
          } catch (err) {
            // network error or bad JSON: keep the last text; try again next tick
          } finally {
            busy = false;
          }
        }

        void tick();
        setInterval(tick, POLL_MS);
        document.addEventListener('visibilitychange', () => void tick());
      }
    };
  }

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    // bootstrap.js L64: we provide no shared modules, we only keep the scope.
    init(scope) {
      shareScope = scope;
    },
    // index.js L13: get(module) resolves to a factory; factory() is the module.
    async get(module) {
      if (module === './extension') {
        const [statusbar, services, apputils, widgets] = await Promise.all([
          shared('@jupyterlab/statusbar', 4),
          shared('@jupyterlab/services', 7),
          shared('@jupyterlab/apputils', 4),
          shared('@lumino/widgets', 2)
        ]);
        const plugin = createPlugin(statusbar.IStatusBar, services.ServerConnection,
          apputils.Notification, widgets.Widget);
        return () => ({ __esModule: true, default: [plugin] });
      }
      if (module === './style') {
        return () => {
          if (!document.getElementById('hubops-usage-style')) {
            const style = document.createElement('style');
            style.id = 'hubops-usage-style';
            style.textContent = '.hubops-usage-gpu.hubops-usage-oom, .hubops-usage-disk.hubops-usage-over { color: var(--jp-error-color1); }';
            document.head.appendChild(style);
          }
          return {};
        };
      }
      throw new Error(`${NAME}: no module ${module}`);
    }
  };
})();
