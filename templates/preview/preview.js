(function(){
  function flag(f,d){
    // a frame wider than its view is flagged in red, not silently cut off (readers would scroll sideways)
    var n=f.previousElementSibling;
    if(!n||!n.classList.contains('overflow-flag')){n=document.createElement('p');n.className='overflow-flag over';n.hidden=true;f.parentNode.insertBefore(n,f);}
    var w=d.scrollingElement?d.scrollingElement.scrollWidth:0,v=f.contentWindow.innerWidth;
    var over=f.offsetParent!==null&&v>0&&w>v;
    n.hidden=!over;n.textContent=over?'Horizontal overflow: the content is '+w+' px wide in a '+v+' px view; readers would have to scroll sideways.':'';
  }
  function fit(f){try{var d=f.contentDocument;if(d&&d.documentElement&&d.readyState==='complete'&&d.URL!=='about:blank'){f.style.height=(d.documentElement.scrollHeight+2)+'px';flag(f,d);}}catch(e){}}
  function fitAll(){document.querySelectorAll('iframe').forEach(fit);}
  var live=document.body.dataset.version;  // set when served: the page follows the server's versions
  var tabs=[];
  function show(name){
    var found=false;
    tabs.forEach(function(b){var on=b.dataset.tab===name;b.classList.toggle('on',on);found=found||on;});
    if(!found)return false;
    document.querySelectorAll('.tab').forEach(function(t){t.hidden=t.dataset.tab!==name;});
    fitAll();return true;
  }
  function shown(){var b=document.querySelector('nav.tabs button.on');return b?b.dataset.tab:'';}
  function want(){  // a tab on screen that the server has not rendered yet: ask for it
    var t=shown();
    if(live!==undefined&&t&&document.querySelector('.tab[data-tab="'+t+'"] .lazy'))fetch('/show?tab='+encodeURIComponent(t));
  }
  function init(root){  // wire the controls of #page (on load, and after every swap)
    root.querySelectorAll('iframe').forEach(function(f){f.addEventListener('load',function(){fit(f);});});
    tabs=root.querySelectorAll('nav.tabs button');
    tabs.forEach(function(b){b.addEventListener('click',function(){show(b.dataset.tab);history.replaceState(null,'','#'+b.dataset.tab);want();});});
    if(tabs.length){if(!show(location.hash.slice(1)))show(tabs[0].dataset.tab);}
    root.querySelectorAll('.mail').forEach(function(m){
      m.querySelectorAll('[data-part]').forEach(function(b){b.addEventListener('click',function(){
        m.querySelectorAll('[data-part]').forEach(function(x){x.classList.toggle('on',x===b);});
        var text=b.dataset.part==='text';
        m.querySelector('.mail-html').hidden=text;m.querySelector('.mail-text').hidden=!text;fitAll();});});
      m.querySelectorAll('[data-width]').forEach(function(b){b.addEventListener('click',function(){
        m.querySelectorAll('[data-width]').forEach(function(x){x.classList.toggle('on',x===b);});
        var v=m.querySelector('.mailview');v.classList.toggle('mobile',b.dataset.width==='mobile');
        v.classList.toggle('desktop',b.dataset.width!=='mobile');fitAll();});});
    });
    root.querySelectorAll('select[data-variants]').forEach(function(sel){sel.addEventListener('change',function(){
      // a channel's looks (WeChat themes): one frame each, only the chosen one shown
      var box=sel.closest('.tab')||root;
      box.querySelectorAll('[data-variant]').forEach(function(f){f.hidden=f.dataset.variant!==sel.value;});fitAll();});});
    root.querySelectorAll('[data-copy]').forEach(function(b){b.addEventListener('click',function(){
      var box=b.closest('.copy'),html=JSON.parse(box.querySelector('.copy-data').textContent).html;
      var text=new DOMParser().parseFromString(html,'text/html').body.textContent;
      function put(e){e.clipboardData.setData('text/html',html);e.clipboardData.setData('text/plain',text);e.preventDefault();}
      document.addEventListener('copy',put);var ok=false;
      try{ok=document.execCommand('copy');}catch(e){}finally{document.removeEventListener('copy',put);}
      box.querySelector('.copy-status').textContent=ok?'已复制：在公众号编辑器里粘贴 (Ctrl+V)':'复制失败：浏览器拒绝了剪贴板';});});
    fitAll();
  }
  init(document.getElementById('page'));
  window.addEventListener('resize',fitAll);
  window.addEventListener('load',fitAll);
  if(live===undefined||!window.EventSource)return;
  // live: on every new version the server announces, fetch the page (only the tab on screen is
  // rendered in it) and swap #page in place: no reload, the tab, the email switches, the frames'
  // heights and the scroll position stay
  var busy=false,again=false;
  function swap(doc){
    var cur=document.getElementById('page'),next=doc.getElementById('page');
    if(!next||doc.body.dataset.version===live)return;
    var heights={};
    cur.querySelectorAll('iframe').forEach(function(f){heights[f.className]=f.style.height;});
    next.querySelectorAll('iframe').forEach(function(f){if(heights[f.className])f.style.height=heights[f.className];});
    var on=[].map.call(cur.querySelectorAll('.mail .switches button.on'),function(b){return b.dataset.part?'[data-part="'+b.dataset.part+'"]':'[data-width="'+b.dataset.width+'"]';});
    document.title=doc.title;
    live=doc.body.dataset.version;document.body.dataset.version=live;
    next=document.adoptNode(next);cur.replaceWith(next);
    init(next);
    on.forEach(function(sel){var b=next.querySelector('.mail .switches button'+sel);if(b&&!b.classList.contains('on'))b.click();});
    want();
  }
  function update(){
    if(busy){again=true;return;}
    busy=true;
    fetch('/',{cache:'no-store'}).then(function(r){return r.text();})
      .then(function(text){swap(new DOMParser().parseFromString(text,'text/html'));})
      .catch(function(){})
      .then(function(){busy=false;if(again){again=false;update();}});
  }
  want();
  var es=new EventSource('/events?tab='+encodeURIComponent(shown()));
  es.onmessage=function(e){if(e.data!==live)update();};
})();
