(function(){
  function flag(f,d){
    // a frame wider than its view is flagged in red, not silently cut off (readers would scroll sideways)
    var n=f.previousElementSibling;
    if(!n||!n.classList.contains('overflow-flag')){n=document.createElement('p');n.className='overflow-flag over';n.hidden=true;f.parentNode.insertBefore(n,f);}
    var w=d.scrollingElement?d.scrollingElement.scrollWidth:0,v=f.contentWindow.innerWidth;
    var over=f.offsetParent!==null&&v>0&&w>v;
    n.hidden=!over;n.textContent=over?'Horizontal overflow: the content is '+w+' px wide in a '+v+' px view; readers would have to scroll sideways.':'';
  }
  function fit(f){try{var d=f.contentDocument;if(d&&d.documentElement){f.style.height=(d.documentElement.scrollHeight+2)+'px';flag(f,d);}}catch(e){}}
  function fitAll(){document.querySelectorAll('iframe').forEach(fit);}
  document.querySelectorAll('iframe').forEach(function(f){f.addEventListener('load',function(){fit(f);});});
  var tabs=document.querySelectorAll('nav.tabs button');
  function show(name){
    var found=false;
    tabs.forEach(function(b){var on=b.dataset.tab===name;b.classList.toggle('on',on);found=found||on;});
    if(!found)return false;
    document.querySelectorAll('.tab').forEach(function(t){t.hidden=t.dataset.tab!==name;});
    fitAll();return true;
  }
  tabs.forEach(function(b){b.addEventListener('click',function(){show(b.dataset.tab);history.replaceState(null,'','#'+b.dataset.tab);});});
  if(tabs.length){if(!show(location.hash.slice(1)))show(tabs[0].dataset.tab);}
  document.querySelectorAll('.mail').forEach(function(m){
    m.querySelectorAll('[data-part]').forEach(function(b){b.addEventListener('click',function(){
      m.querySelectorAll('[data-part]').forEach(function(x){x.classList.toggle('on',x===b);});
      var text=b.dataset.part==='text';
      m.querySelector('.mail-html').hidden=text;m.querySelector('.mail-text').hidden=!text;fitAll();});});
    m.querySelectorAll('[data-width]').forEach(function(b){b.addEventListener('click',function(){
      m.querySelectorAll('[data-width]').forEach(function(x){x.classList.toggle('on',x===b);});
      var v=m.querySelector('.mailview');v.classList.toggle('mobile',b.dataset.width==='mobile');
      v.classList.toggle('desktop',b.dataset.width!=='mobile');fitAll();});});
  });
  document.querySelectorAll('[data-copy]').forEach(function(b){b.addEventListener('click',function(){
    var box=b.closest('.copy'),html=JSON.parse(box.querySelector('.copy-data').textContent).html;
    var text=new DOMParser().parseFromString(html,'text/html').body.textContent;
    function put(e){e.clipboardData.setData('text/html',html);e.clipboardData.setData('text/plain',text);e.preventDefault();}
    document.addEventListener('copy',put);var ok=false;
    try{ok=document.execCommand('copy');}catch(e){}finally{document.removeEventListener('copy',put);}
    box.querySelector('.copy-status').textContent=ok?'已复制：在公众号编辑器里粘贴 (Ctrl+V)':'复制失败：浏览器拒绝了剪贴板';});});
  window.addEventListener('resize',fitAll);
  var live=document.body.dataset.version;
  if(live!==undefined&&window.EventSource){
    var shown=function(){var b=document.querySelector('nav.tabs button.on');return b?b.dataset.tab:'';};
    var want=function(){var t=shown();if(t&&document.querySelector('.tab[data-tab="'+t+'"] .lazy'))fetch('/show?tab='+encodeURIComponent(t));};
    tabs.forEach(function(b){b.addEventListener('click',want);});want();
    var es=new EventSource('/events?tab='+encodeURIComponent(shown()));
    es.onmessage=function(e){if(e.data!==live){es.close();location.reload();}};
  }
})();
