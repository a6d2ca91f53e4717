using OnnxAlign.Model;

namespace OnnxAlign.Tests;

/// <summary>The shared-session fixture itself: one session per key, the options in the key, and everything disposed at the end.</summary>
public sealed class ModelSessionsTests
{
    [Fact]
    public void OneSessionPerModelAndOptionsAllDisposedAtTheEnd()
    {
        OnnxDenoiser first, single;
        using (var sessions = new ModelSessions())
        {
            first = sessions.Toy("gmm2d");
            Assert.Same(first, sessions.Toy("gmm2d"));
            Assert.Same(first, sessions.Denoiser(DiffusionModel.Locate(TestSupport.Toy("gmm2d")), new DenoiserOptions()));   // the defaults spelled out
            single = sessions.Toy("gmm2d", new DenoiserOptions { IntraOpThreads = 1 });
            Assert.NotSame(first, single);
            Assert.Same(single, sessions.Toy("gmm2d", new DenoiserOptions { IntraOpThreads = 1 }));
            Assert.Equal(2, sessions.Opened);
            Assert.Throws<ArgumentException>(() => sessions.Toy("gmm2d", new DenoiserOptions { ConfigureSession = _ => { } }));
            first.Probe();
        }
        Assert.Throws<ObjectDisposedException>(() => first.Probe());
        Assert.Throws<ObjectDisposedException>(() => single.Probe());
    }
}
